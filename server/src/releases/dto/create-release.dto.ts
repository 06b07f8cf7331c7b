import { ApiProperty, ApiPropertyOptional } from '@nestjs/swagger';
import { IsNotEmpty, IsObject, IsOptional, IsString, Matches, MaxLength } from 'class-validator';
import { IsStringRecord } from '../../common/validation.js';

/** Packages a release may name: far beyond any real process (each needs its own package action). */
const MAX_RELEASE_PACKAGES = 1_000;

export class CreateReleaseDto {
  @ApiProperty({ type: String })
  @IsString()
  @IsNotEmpty()
  @MaxLength(200)
  projectId: string;
  @ApiProperty({ type: String })
  @IsString()
  @Matches(/^[A-Za-z0-9][A-Za-z0-9.+_-]{0,99}$/, {
    message: 'version must be letters, digits, ".", "+", "_" or "-" (at most 100)',
  })
  version: string;
  @ApiPropertyOptional({ type: String })
  @IsOptional()
  @IsString()
  @MaxLength(100)
  channelId?: string;
  @ApiPropertyOptional({ type: 'object', additionalProperties: true })
  @IsOptional()
  @IsObject({ message: 'packages must be an object like {"web": "1.0.0"}' })
  @IsStringRecord({ maxKeys: MAX_RELEASE_PACKAGES, maxValueLength: 100 })
  packages?: Record<string, string>;
}
